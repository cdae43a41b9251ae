"""Node roles: user, hub, full peer. Each role is a service the Node starts after its store.

A role object has ``name``, ``startService()`` and ``stopService()`` (which may return a Deferred), and is
built with the Node so it can reach ``node.store``, ``node.api`` (to add routes), ``node.clock`` and
``node.sync_factory``. The Node keeps them in ``node.roles``.
"""
