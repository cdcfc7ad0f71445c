import json
from pathlib import Path

import pytest

from lag_exporter.documents import Document
from lag_exporter.errors import ConfigError
from lag_exporter.outbox import Outbox


def docs(n: int) -> list[Document]:
    return [Document(f"id-{n}", {"topic": "t", "p0": n})]


def drain(outbox: Outbox) -> list[int]:
    seen = []
    while (batch := outbox.oldest(wait_s=0)) is not None:
        seen.append(batch.documents[0].source["p0"])
        outbox.delivered(batch)
    return seen


def test_batches_come_out_in_order() -> None:
    outbox = Outbox()
    for n in range(5):
        outbox.put(docs(n))
    assert drain(outbox) == [0, 1, 2, 3, 4]


def test_undelivered_batch_stays_first() -> None:
    outbox = Outbox()
    outbox.put(docs(1))
    outbox.put(docs(2))
    first = outbox.oldest(wait_s=0)
    again = outbox.oldest(wait_s=0)
    assert first is again


def test_full_outbox_drops_oldest_and_counts() -> None:
    outbox = Outbox(max_batches=3)
    for n in range(5):
        outbox.put(docs(n))
    assert outbox.dropped == 2
    assert drain(outbox) == [2, 3, 4]


def test_batches_older_than_max_age_are_dropped() -> None:
    outbox = Outbox(max_age_s=-1)  # everything is already too old
    outbox.put(docs(1))
    assert outbox.oldest(wait_s=0) is None
    assert outbox.dropped == 1


def test_spooled_batches_survive_a_restart(tmp_path: Path) -> None:
    first = Outbox(tmp_path)
    for n in range(3):
        first.put(docs(n))
    delivered = first.oldest(wait_s=0)
    assert delivered is not None
    first.delivered(delivered)
    first.close()  # as after a crash: nothing else is flushed
    second = Outbox(tmp_path)
    assert drain(second) == [1, 2]
    assert list(tmp_path.glob("*.json")) == []
    second.close()


def test_new_batches_after_restart_sort_after_the_restored_ones(tmp_path: Path) -> None:
    first = Outbox(tmp_path)
    first.put(docs(1))
    first.close()
    second = Outbox(tmp_path)
    second.put(docs(2))
    assert drain(second) == [1, 2]
    second.close()


def test_spool_keeps_document_ids(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.put(docs(7))
    outbox.close()
    content = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert content["documents"][0]["id"] == "id-7"


def test_second_process_on_the_same_spool_is_refused(tmp_path: Path) -> None:
    holder = Outbox(tmp_path)
    with pytest.raises(ConfigError, match="in use by another lag-exporter"):
        Outbox(tmp_path)
    holder.close()


def test_unwritable_spool_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # even root cannot make a directory below a file
    with pytest.raises(ConfigError, match="not writable"):
        Outbox(blocker / "spool")


def test_unreadable_spool_file_is_skipped(tmp_path: Path) -> None:
    (tmp_path / f"{5:020d}.json").write_text("{not json")
    outbox = Outbox(tmp_path)
    assert drain(outbox) == []
    outbox.close()
