"""Domain model, database, configuration, mail understanding and rules shared by every process.

Nothing in here imports from ``gateway`` or ``worker``: dependencies point one way.
"""
