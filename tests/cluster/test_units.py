"""The cluster's sans-I/O parts, in memory: subjects and partitions,
per-source batching, the lease policy, message shapes and the config."""

from __future__ import annotations

import calendar
import io
import json

import msgpack
import pytest

from probetag._config import ConfigError
from probetag._stage import OutChunk, pack_entry
from probetag.cluster import (UNKNOWN_SOURCE, in_flight_wait, BadMessage, MessageIds, PartitionState, SourceBatcher,
                              cluster_config_from_mapping, decode_input, decode_output, encode_output, output_message,
                              load_cluster_config, out_subject, partition_of, plan, source_token)


# -- subjects -------------------------------------------------------------------

def test_source_token_is_subject_safe():
    assert source_token("203.0.113.7") == "203_0_113_7"
    assert source_token("2001:db8::1") == "2001_db8__1"
    assert source_token("host name*>x") == "host_name__x"
    assert source_token(None) == UNKNOWN_SOURCE and source_token("") == UNKNOWN_SOURCE


def test_long_tokens_are_cut_and_stay_distinct():
    a, b = "a" * 200 + ".example", "a" * 200 + ".example.org"
    ta, tb = source_token(a), source_token(b)
    assert len(ta) == len(tb) == 64 and ta != tb


def test_partition_matches_nats_server_fnv1a():
    # Values observed from nats-server 2.9.10's partition(8,1) on this
    # mapping (configs/nats/mapping.conf), and checked again live in the
    # cluster tests: FNV-1a 32-bit, modulo N.
    assert [partition_of(t, 8) for t in ("10_0_0_1", "a", "b", "c", "d")] == [0, 4, 5, 2, 3]


def test_out_subject_sanitises_each_tag_part():
    assert out_subject("logs.out", "syslog.user") == "logs.out.syslog.user"
    assert out_subject("logs.out", "a..b c") == "logs.out.a._.b_c"


# -- batching -------------------------------------------------------------------

def _entries(records):
    return b"".join(pack_entry(1_700_000_000 + i, r) for i, r in enumerate(records))


def test_batches_hold_one_source_in_order_and_are_bounded():
    recs = [{"message": f"m{i}", "source_address": f"10.0.0.{i % 3}"} for i in range(10)]
    recs.append({"message": "no source here"})
    batches = SourceBatcher(max_records=2).split("t", _entries(recs))
    seen: dict[str, list[str]] = {}
    for b in batches:
        assert b.tag == "t" and 1 <= b.count <= 2
        msgs = [r["message"] for _, r in msgpack.Unpacker(io.BytesIO(b.entries), raw=False)]
        assert len(msgs) == b.count
        seen.setdefault(b.token, []).extend(msgs)
    assert seen["10_0_0_0"] == ["m0", "m3", "m6", "m9"]
    assert seen["10_0_0_1"] == ["m1", "m4", "m7"]
    assert seen[UNKNOWN_SOURCE] == ["no source here"]
    assert sum(b.count for b in batches) == len(recs)


def test_batcher_finds_source_inside_rsyslog_record_fields():
    rec = {"rawmsg": "HELP#015", "fromhost-ip": "198.51.100.23", "hostname": "198.51.100.23",
           "syslogtag": "HELP#015", "msg": ""}
    (b,) = SourceBatcher().split("t", _entries([rec]))
    assert b.token == "198_51_100_23"


def test_undecodable_tail_is_kept_not_dropped():
    good = _entries([{"message": "x", "source_address": "10.0.0.1"}])
    batches = SourceBatcher().split("t", good + b"\xc1garbage")
    assert [b.token for b in batches] == ["10_0_0_1", UNKNOWN_SOURCE]
    assert batches[1].entries == b"\xc1garbage"


def test_message_ids_are_unique_per_instance():
    a, b = MessageIds(), MessageIds()
    ids = {a.next() for _ in range(100)} | {b.next() for _ in range(100)}
    assert len(ids) == 200


# -- leases -----------------------------------------------------------------------

def test_plan_fair_share_and_release():
    assert len(plan("a", 8, {}, {"a"}).claim) == 8
    p = plan("b", 8, {i: "a" for i in range(8)}, {"a", "b"})
    assert p.claim == () and p.release == ()  # all taken: b waits for a to release
    p = plan("a", 8, {i: "a" for i in range(8)}, {"a", "b"})
    assert p.release == (4, 5, 6, 7) and p.claim == ()
    p = plan("b", 8, {i: "a" for i in range(4)}, {"a", "b"})
    assert sorted(p.claim) == [4, 5, 6, 7]


def test_plan_takes_over_expired_partitions_and_caps():
    # a died: its keys expired, only b's remain
    p = plan("b", 8, {4: "b", 5: "b", 6: "b", 7: "b"}, {"b"})
    assert sorted(p.claim) == [0, 1, 2, 3]
    assert len(plan("c", 8, {}, {"c"}, max_owned=3).claim) == 3
    assert len(plan("c", 7, {}, {"a", "b", "c"}).claim) == 3  # ceil(7/3)


def test_plan_starting_points_differ_between_workers():
    starts = {plan(w, 64, {}, {f"w{i}" for i in range(8)}).claim[0] for w in (f"w{i}" for i in range(8))}
    assert len(starts) > 4


def test_plan_claims_partitions_held_before_first():
    p = plan("a", 8, {0: "b", 1: "b", 2: "b", 3: "b"}, {"a", "b"}, prefer={6, 7})
    assert set(p.claim) == {4, 5, 6, 7} and p.claim[:2] in ((6, 7), (7, 6))
    p = plan("a", 8, {i: "b" for i in range(5)}, {"a", "b", "c"}, prefer={7})
    assert p.claim[0] == 7 and len(p.claim) == 3


def test_lease_valid_from_renewal_send_time():
    st = PartitionState(3, revision=7, claimed_at=100.0, valid_until=108.0)
    assert st.may_fetch(105.0, 2.0) and not st.may_fetch(106.5, 2.0)  # staleness: before every fetch
    st.renewed(9, sent_at=104.0, ttl=8.0)
    assert st.revision == 9 and st.valid_until == 112.0 and st.may_fetch(106.5, 2.0)
    st.renewed(10, sent_at=101.0, ttl=8.0)  # a late answer to an older attempt never shortens it
    assert st.valid_until == 112.0
    assert not st.expired(111.9) and st.expired(112.0)
    st.releasing = True
    assert not st.may_fetch(106.5, 2.0)


def test_in_flight_wait_bounded_by_what_is_pending():
    # Nothing un-acked (cold start, clean release): fetch at once.
    assert in_flight_wait(0, None, 1000.0, 50.0, 50.0, 30.0) == (0.0, "idle")
    assert in_flight_wait(None, 990.0, 1000.0, 50.0, 50.0, 30.0) == (0.0, "idle")
    # Un-acked messages last delivered 20 s ago, ack_wait 30: due in 10 (+1 skew).
    assert in_flight_wait(5, 980.0, 1000.0, 50.0, 50.0, 30.0) == (11.0, "redelivery_due")
    # Delivered long ago: due already.
    assert in_flight_wait(5, 900.0, 1000.0, 50.0, 50.0, 30.0) == (0.0, "redelivery_due")
    # Never longer than ack_wait after the claim (a server clock ahead of ours).
    assert in_flight_wait(5, 1100.0, 1000.0, 50.0, 60.0, 30.0) == (20.0, "ack_wait")
    assert in_flight_wait(5, None, 1000.0, 50.0, 90.0, 30.0) == (0.0, "ack_wait")


# -- message shapes ---------------------------------------------------------------

def test_decode_input_packed_with_tag_header():
    data = _entries([{"message": "x"}])
    assert decode_input({"Probetag-Tag": "syslog", "Probetag-Count": "1"}, data) == [("syslog", data, 1)]


def test_decode_input_vector_json_event():
    ev = {"message": "GET / HTTP/1.0#015", "source_ip": "10.0.0.1", "tag": "vec",
          "timestamp": "2026-11-27T10:00:00Z"}
    ((tag, entries, n),) = decode_input(None, json.dumps(ev).encode())
    (t, rec), = list(msgpack.Unpacker(io.BytesIO(entries), raw=False))
    assert tag == "vec" and n == 1 and rec == {"message": "GET / HTTP/1.0#015", "source_ip": "10.0.0.1"}
    assert int.from_bytes(t.data[:4], "big") == calendar.timegm((2026, 11, 27, 10, 0, 0))


def test_decode_input_rejects_other_bodies():
    with pytest.raises(BadMessage):
        decode_input(None, b"\x92\x01\x80")
    with pytest.raises(BadMessage):
        decode_input(None, b"{not json")


def test_output_round_trip():
    chunk = OutChunk("a.b", _entries([{"message": "x", "probe": {"name": "GetRequest"}}]), 1)
    data = encode_output(chunk)
    ((tag, entries, n),) = decode_output(data)
    (_, rec), = list(msgpack.Unpacker(io.BytesIO(entries), raw=False))
    assert tag == "a.b" and n == 1 and rec == {"message": "x", "probe": {"name": "GetRequest"}}


def test_packed_output_is_the_chunk_as_is():
    entries = _entries([{"message": "x"}, {"message": "y"}])
    chunk = OutChunk("a.b", entries, 2)
    body, headers = output_message(chunk)
    assert body is entries  # spliced through: no copy, no per-record work
    assert headers == {"Probetag-Tag": "a.b", "Probetag-Count": "2", "Probetag-Format": "packed"}
    assert decode_output(body, headers=headers) == [("a.b", entries, 2)]
    body, headers = output_message(chunk, "ndjson")
    assert headers == {"Probetag-Tag": "a.b"} and body.count(b"\n") == 2
    ((tag, got, n),) = decode_output(body, headers=headers)  # NDJSON, whatever the tag header
    assert tag == "a.b" and n == 2 and len(list(msgpack.Unpacker(io.BytesIO(got), raw=False))) == 2


# -- config ---------------------------------------------------------------------------

def test_cluster_config_defaults_and_errors(tmp_path):
    cfg = cluster_config_from_mapping({"partitions": 16})
    assert cfg.partitions == 16 and cfg.replicas == 3 and cfg.in_prefix == "logs.in"
    f = tmp_path / "c.yaml"
    f.write_text("partitions: 8\nack_wiat: 3\n")
    with pytest.raises(ConfigError, match="ack_wiat: unknown key"):
        load_cluster_config(f)
    with pytest.raises(ConfigError, match="replicas"):
        cluster_config_from_mapping({"replicas": 2})
    with pytest.raises(ConfigError, match="out_prefix"):
        cluster_config_from_mapping({"out_prefix": "logs.>"})
    assert (cfg.lease_ttl, cfg.lease_renew, cfg.ack_wait, cfg.out_format) == (8.0, 1.0, 8.0, "packed")
    with pytest.raises(ConfigError, match="lease_renew"):
        cluster_config_from_mapping({"lease_ttl": 3, "lease_renew": 2})
    with pytest.raises(ConfigError, match="fetch_timeout"):
        cluster_config_from_mapping({"lease_ttl": 3, "fetch_timeout": 1.5})
    with pytest.raises(ConfigError, match="out_format"):
        cluster_config_from_mapping({"out_format": "json"})


# -- the NATS client's own log lines ------------------------------------------------

def test_library_log_records_become_logfmt_lines_without_traceback(capsys):
    import logging

    from probetag._logging import route_library_logs, setup_logging

    setup_logging("info")
    route_library_logs("nats")
    route_library_logs("nats")  # idempotent: one line per record, not two
    try:
        raise EOFError("nats: unexpected EOF")
    except EOFError as exc:
        logging.getLogger("nats.aio.client").error("nats: encountered error", exc_info=exc)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    assert " event=library_log logger=nats.aio.client " in err[0]
    assert "error=EOFError" in err[0] and 'detail="nats: unexpected EOF"' in err[0]
    assert "Traceback" not in err[0]
