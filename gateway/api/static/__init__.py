"""Static assets served by the API: the ops page (package data)."""
