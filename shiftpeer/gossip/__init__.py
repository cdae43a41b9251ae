"""Gossip of the public firehose among full peers and federated hubs (docs/fullpeer.md).

``core.Gossip`` (pull ``master`` from every firehose neighbour), ``inflight`` (lazy body requests:
one puller asks, the others wait or borrow; announce suppression), ``scores`` (strikes and bans),
``neighbours`` (the bounded set of dialled neighbours: static plus discovered).
"""
