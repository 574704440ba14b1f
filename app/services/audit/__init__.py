"""The audit trail: MAC-chained events, written with the change they record, and read back."""
