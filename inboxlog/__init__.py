"""The composition root: the ``inboxlog`` command wires shared, gateway and worker together."""
