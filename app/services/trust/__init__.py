"""Evidence that outlives a certificate: trusted time (the TSA), revocation status (OCSP, the
root CRL), the published CA certificates, and what a long-term signature carries."""
