"""Pure decision code: the §4 logging decision and the §5 routing rules."""
