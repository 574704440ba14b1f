"""roamsign: roaming-certificate signing authorised by one-time passwords."""
