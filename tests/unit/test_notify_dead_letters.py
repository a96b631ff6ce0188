"""The operators' `system_alert` for queue entries given up: one per admin per batch, with the count."""

from __future__ import annotations

from whymail.notify.alerts import DeadEntry, dead_letter_alerts


def test_entries_dead_together_are_one_alert_per_admin_with_the_count():
    dead = [DeadEntry(7, "b.test", "x@a.test", "450 busy"), DeadEntry(9, "a.test", "y@a.test", None)]
    notes = dead_letter_alerts([1, 2], dead, total=5)
    assert [n.user_id for n in notes] == [1, 2] and {n.type for n in notes} == {"system_alert"}
    note = notes[0]
    assert note.title == "2 queue entries given up (dead)"
    assert "a.test, b.test" in note.body and "5 dead entries" in note.body and "450 busy" in note.body
    assert note.data == {"source": "queue", "count": 2, "dead_total": 5, "queue_ids": [7, 9],
                         "recipient_domains": ["a.test", "b.test"]}


def test_no_dead_entries_or_no_admins_make_no_alert():
    assert dead_letter_alerts([1], [], total=3) == []
    assert dead_letter_alerts([], [DeadEntry(1, "a.test", "", None)], total=1) == []


def test_many_domains_are_shortened_in_the_body():
    dead = [DeadEntry(i, f"d{i}.test", "", None) for i in range(8)]
    [note] = dead_letter_alerts([1], dead, total=8)
    assert note.title == "8 queue entries given up (dead)" and "and 3 more" in note.body
