"""The processing pipeline: small named stages run in order by one driver (see driver.STAGES)."""
