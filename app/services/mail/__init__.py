"""E-mail: the texts, the notices queued with the change they report, the sealed outbox, the
courier and delivery loops that send it, and the demo SMTP sink."""
