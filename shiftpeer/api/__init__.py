"""The node's local HTTP+JSON API on loopback, protected by a bearer token kept in the node directory.

``app.ApiApp`` is the route table (add routes with ``node.api.add_route``), ``resource.ApiResource`` turns
HTTP into route calls, ``token`` keeps ``api.token``, ``service.ApiService`` listens and writes ``api.url``.
"""
