"""The edge: the SMTP intake gateway and the HTTP API."""
