"""The CDC watchdog's policy: when a Debezium task is healed, and when it is left alone."""

from fraudgraph.stack.cdc_watchdog import RELEASE_SLOT, RESTART_TASKS, Observation, SlotHolder, decide

STALL = 30.0


def status(connector: str = "RUNNING", *tasks: str) -> dict:
    return {
        "connector": {"state": connector},
        "tasks": [{"id": i, "state": s} for i, s in enumerate(tasks or ("RUNNING",))],
    }


def kinds(obs: Observation) -> list[str]:
    return [a.kind for a in decide(obs, STALL)]


def test_a_streaming_task_is_left_alone():
    assert kinds(Observation(status(), 4.0, SlotHolder(101, 3600.0))) == []


def test_a_wedged_task_gets_the_slot_back_and_is_restarted():
    # The broker-restart wedge: RUNNING, silent, the slot held by a connection older than the silence.
    actions = decide(Observation(status(), 95.0, SlotHolder(101, 600.0)), STALL)
    assert [a.kind for a in actions] == [RELEASE_SLOT, RESTART_TASKS]
    assert actions[0].pid == 101 and "no heartbeat for 95s" in actions[0].why


def test_a_silent_task_holding_no_slot_is_restarted():
    assert kinds(Observation(status(), 95.0, None)) == [RESTART_TASKS]


def test_a_failed_task_is_restarted_and_a_slot_it_left_held_is_released():
    assert kinds(Observation(status("RUNNING", "FAILED"), 2.0, None)) == [RESTART_TASKS]
    assert kinds(Observation(status("FAILED", "RUNNING"), None, SlotHolder(7, 5.0))) == [RELEASE_SLOT, RESTART_TASKS]


def test_a_connection_younger_than_the_silence_is_a_new_task_starting_and_is_left_alone():
    assert kinds(Observation(status(), 95.0, SlotHolder(101, 12.0))) == []


def test_no_heartbeat_ever_means_a_first_snapshot_and_no_registration_means_nothing_to_watch():
    assert kinds(Observation(status(), None, SlotHolder(101, 3600.0))) == []
    assert kinds(Observation(None, 500.0, SlotHolder(101, 3600.0))) == []


def test_silence_up_to_the_stall_time_is_tolerated():
    assert kinds(Observation(status(), STALL, SlotHolder(101, 3600.0))) == []
