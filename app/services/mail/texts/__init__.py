"""The texts of roamsign's e-mails, one module per kind: bilingual (Malay, then English), the
secret (a code or token, if any) alone on the first line, before any registered or caller-given
text such as a name; subjects name the purpose in both languages."""
