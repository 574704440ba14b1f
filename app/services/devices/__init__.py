"""MyGPKI Mobile: one active device per person, its signed requests and its message inbox."""
