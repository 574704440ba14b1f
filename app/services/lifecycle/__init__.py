"""The certificate lifecycle: applications, people, credentials, PINs, e-mailed tokens, jobs."""
