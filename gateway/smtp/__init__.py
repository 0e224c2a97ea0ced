"""The SMTP intake gateway (aiosmtpd): check recipients early, store durably, then answer 250."""
