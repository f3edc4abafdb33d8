"""Connection caps and client IP resolution (pure, no sockets)."""

from mediastream.admission import Admission, AdmissionRegistry, resolve_client_ip


def test_total_cap():
    reg = AdmissionRegistry()
    assert reg.open_connection("a", 2) is Admission.OK
    assert reg.open_connection("b", 2) is Admission.OK
    assert reg.open_connection("c", 2) is Admission.TOO_MANY_CONNECTIONS
    reg.release("a")
    assert reg.open_connection("c", 2) is Admission.OK


def test_pending_caps_global_and_per_ip_and_release_is_idempotent():
    reg = AdmissionRegistry()
    assert reg.add_pending("a", "1.1.1.1", max_pending=3, max_per_ip=2) is Admission.OK
    assert reg.add_pending("b", "1.1.1.1", max_pending=3, max_per_ip=2) is Admission.OK
    assert reg.add_pending("c", "1.1.1.1", max_pending=3, max_per_ip=2) is Admission.TOO_MANY_PENDING
    assert reg.add_pending("d", "2.2.2.2", max_pending=3, max_per_ip=2) is Admission.OK
    assert reg.add_pending("e", "3.3.3.3", max_pending=3, max_per_ip=2) is Admission.TOO_MANY_PENDING
    reg.promote("a")  # an accepted start frees the pending slot
    reg.release("a")
    reg.release("a")
    assert reg.pending_count == 2
    assert reg.add_pending("c", "1.1.1.1", max_pending=3, max_per_ip=2) is Admission.OK
    for conn in "bcd":
        reg.release(conn)
    assert reg.pending_count == 0 and not reg.pending_per_ip


def test_peer_is_the_client_without_trusted_proxies():
    assert resolve_client_ip("198.51.100.1", "192.0.2.1", []) == "198.51.100.1"
    assert resolve_client_ip(None, None, []) == "unknown"


def test_spoofed_header_from_untrusted_peer_is_ignored():
    assert resolve_client_ip("198.51.100.1", "192.0.2.1", ["10.0.0.1"]) == "198.51.100.1"


def test_chain_is_walked_right_to_left_to_the_first_untrusted_hop():
    trusted = ["10.0.0.0/8", "172.16.0.1"]
    assert resolve_client_ip("10.0.0.2", "203.0.113.9, 192.0.2.1, 172.16.0.1, 10.0.0.7", trusted) == "192.0.2.1"


def test_ipv4_mapped_peer_matches_ipv4_proxy():
    assert resolve_client_ip("::ffff:10.0.0.1", "192.0.2.5", ["10.0.0.1"]) == "192.0.2.5"


def test_garbage_in_the_chain_stops_the_walk():
    assert resolve_client_ip("10.0.0.1", "192.0.2.5, not-an-ip", ["10.0.0.1"]) == "10.0.0.1"


# --- eviction: a flood of silent sockets churns itself, real streams get in -------------------------


def _fill(reg: AdmissionRegistry, per_ip: dict[str, int], max_pending: int, evicted: list[str]) -> None:
    for ip, count in per_ip.items():
        for n in range(count):
            conn = f"{ip}#{n}"
            assert reg.add_pending(conn, ip, max_pending, 4, evict=lambda conn=conn: evicted.append(conn)) is Admission.OK


def test_full_pending_parks_the_oldest_silent_socket_of_the_busiest_address():
    reg, evicted = AdmissionRegistry(), []
    _fill(reg, {"10.0.0.1": 1, "10.0.0.2": 3, "10.0.0.3": 2}, 6, evicted)
    assert reg.add_pending("new", "10.0.0.9", 6, 4, evict=lambda: None, max_parked=10) is Admission.OK
    # Displaced, not closed: it keeps its start window but holds no slot and no MAX_CONNECTIONS share.
    assert evicted == [] and list(reg.parked) == ["10.0.0.2#0"]
    assert reg.pending_count == 6 and reg.pending_per_ip["10.0.0.2"] == 2
    reg.promote("10.0.0.2#0")  # a parked socket that starts after all is admitted like any other
    assert not reg.parked


def test_beyond_the_parking_cap_the_oldest_parked_socket_is_closed():
    reg, evicted = AdmissionRegistry(), []
    _fill(reg, {"10.0.0.1": 2}, 2, evicted)
    assert reg.add_pending("a", "10.0.0.8", 2, 4, evict=lambda: evicted.append("a"), max_parked=1) is Admission.OK
    assert evicted == [] and list(reg.parked) == ["10.0.0.1#0"]
    assert reg.add_pending("b", "10.0.0.9", 2, 4, evict=lambda: None, max_parked=1) is Admission.OK
    assert evicted == ["10.0.0.1#0"] and list(reg.parked) == ["10.0.0.1#1"] and reg.evictions == 1
    assert "10.0.0.1#0" not in reg.open


def test_parked_sockets_do_not_count_against_the_connection_cap():
    reg = AdmissionRegistry()
    for conn, ip in (("a", "10.0.0.1"), ("b", "10.0.0.2")):
        assert reg.open_connection(conn, 2) is Admission.OK
        reg.add_pending(conn, ip, 1, 4, evict=lambda: None, max_parked=10)
    assert list(reg.parked) == ["a"]
    assert reg.open_connection("c", 2) is Admission.OK  # a is parked: only b counts
    assert reg.open_connection("d", 2) is Admission.TOO_MANY_CONNECTIONS


def test_no_eviction_for_an_address_that_already_holds_as_many():
    reg, evicted = AdmissionRegistry(), []
    _fill(reg, {"10.0.0.1": 2, "10.0.0.2": 2}, 4, evicted)
    assert reg.add_pending("more", "10.0.0.1", 4, 4, evict=lambda: None) is Admission.TOO_MANY_PENDING
    assert evicted == []


def test_a_socket_that_sent_start_gives_its_pending_slot_up_and_is_never_evicted():
    reg, evicted = AdmissionRegistry(), []
    _fill(reg, {"10.0.0.1": 2}, 2, evicted)
    reg.open.update({"10.0.0.1#0", "10.0.0.1#1"})
    reg.starting("10.0.0.1#0")
    reg.starting("10.0.0.1#1")
    assert reg.pending_count == 0 and not reg.pending_per_ip and reg.open_count == 2
    # A ramp from one address: the next sockets get pending slots while those two are admitted.
    assert reg.add_pending("new", "10.0.0.1", 2, 2, evict=lambda: None) is Admission.OK
    assert reg.add_pending("newer", "10.0.0.9", 1, 4, evict=lambda: None, max_parked=10) is Admission.OK
    assert evicted == [] and list(reg.parked) == ["new"]
