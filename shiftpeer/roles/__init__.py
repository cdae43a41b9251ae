"""Node roles: user, flows, hub. Each role is a service the Node starts after its store, before its API.

A role has a ``name`` and ``startService()``/``stopService()`` (which may return a Deferred), and is
built from the Node (``node.store``, ``node.api``, ``node.clock``, ``node.key``, ``node.settings``).
Optional hooks the Node calls: ``peer_connected(conn, kind)`` (kind "hub", "peer" or "incoming"),
``install_sync(factory)``, ``may_read``/``may_write(peer_id, dbname, conn)`` (the node's sync policy:
any role may allow, default deny), ``housekeeping()``; ``replications`` is reported as lag by status.
``shiftpeer.nodesettings.default_roles`` picks the roles from the settings. See docs/node.md.
"""
