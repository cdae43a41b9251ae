"""Fuzzing the sync layer with hypothesis: frame decoder, message decoding, every message handler."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rel_fuzz import (HandlerTarget, RpcTarget, check_decode, check_framing, fast_settings, generated_campaign,
                      mutation_campaign, rpc_campaign)
from shiftpeer.identity import NodeKey
from shiftpeer.sync.framing import encode_frame
from shiftpeer.store import Store


@fast_settings(1500)
@given(st.lists(st.binary(max_size=300), max_size=8), st.lists(st.integers(0, 10**6), max_size=10),
       st.binary(max_size=600))
def test_frame_decoder_never_fails_or_overbuffers(payloads, cuts, noise):
    """Frames come back whole however the stream is split, and arbitrary bytes give frames or FrameTooLarge
    without buffering past the limit."""
    check_framing(payloads, cuts, noise)


@fast_settings(1500)
@given(st.binary(max_size=200))
def test_decode_refuses_garbage_with_protocol_error(payload):
    """Any payload decodes to a schema-valid message or raises ProtocolError, never anything else."""
    check_decode(payload)


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    store = Store(str(tmp_path_factory.mktemp("fuzz") / "store"), sync=False)
    yield HandlerTarget(store, NodeKey.generate())
    store.close()


@pytest.mark.allow_logged_errors   # refusals are logged as warnings; the target itself fails on errors
def test_handlers_survive_generated_sequences(target):
    """Generated frame sequences reach every handler on a real store: no exception escapes, nothing is logged
    as an error, bad input closes the connection with an error frame, and the documents stay unchanged."""
    fed = generated_campaign(target, 400)
    assert fed > 400 and target.closed > 50


@pytest.mark.allow_logged_errors
def test_handlers_survive_mutated_corpus(target):
    """Byte- and CBOR-level mutations of generated frames (the script's bulk stage) hold the same properties."""
    if len(target.corpus) < 100:
        generated_campaign(target, 100)
    assert mutation_campaign(target, target.corpus, 4000, seed=1) >= 4000


@pytest.mark.allow_logged_errors   # refusals are warnings; RpcTarget itself fails on logged errors
def test_hub_rpc_methods_answer_every_generated_call(tmp_path):
    """Generated calls to every hub RPC method, from registered and unregistered peers, are each answered
    with a result or an error, never close the connection or log an error, and leave the store consistent."""
    store = Store(str(tmp_path / "hub"), sync=False)
    try:
        target = RpcTarget(store)
        assert rpc_campaign(target, 200) >= 200
    finally:
        store.close()


def test_pull_of_an_empty_database_name_is_a_refusal_not_an_internal_error(target):
    """Found by the fuzzer: a pull naming the database "" is answered not_found like any unknown name, instead
    of an LMDB error (empty key) escaping the store and closing the connection as an internal error."""
    from shiftpeer.store import NotFound

    assert target.store.has_database("") is False
    with pytest.raises(NotFound):
        target.store.database("")
    target.run([encode_frame(cbor2.dumps({"t": "pull", "rid": 7, "db": "", "since": 0, "epoch": None,
                                          "live": False}))])
