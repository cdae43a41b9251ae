"""twistd plugin: ``twistd -n shiftpeer --data DIR`` runs a node (logic lives in shiftpeer.tap)."""

from twisted.application.service import ServiceMaker

shiftpeer = ServiceMaker(
    "shiftpeer",
    "shiftpeer.tap",
    "Run a shiftpeer node: LMDB store, TLS sync listener, outgoing replications, local API.",
    "shiftpeer",
)
