"""A dataset far larger than MongoDB's 16 MB document limit streams through the blob chunks
without extra full copies in memory, and comes back bit for bit."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.slow
SIZE_MB = 300

MEASURE = textwrap.dedent(f"""
    import resource, sys
    import numpy as np
    from tensorhub import TensorHub

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    hub = TensorHub(sys.argv[1], project_name="test")
    array = np.random.default_rng(7).random({SIZE_MB} * 2**20 // 8)
    before = peak_mb()
    hub.save_dataset(array, "large")
    after_save = peak_mb()
    back = hub.find_top_dataset("large")
    after_load = peak_mb()
    assert np.array_equal(array, back)
    print(before, after_save, after_load)
""")


@pytest.mark.real_server
@pytest.mark.heavy  # whole examples / hundreds of MB: engine-indifferent, not rerun on ferretdb_pg
def test_hundreds_of_mb_stream_without_extra_copies(server_uri):
    done = subprocess.run([sys.executable, "-c", MEASURE, server_uri], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    before, after_save, after_load = map(float, done.stdout.split())
    assert after_save - before < 64, f"saving {SIZE_MB} MB grew the process by {after_save - before:.0f} MB"
    # loading needs the one array it returns, nothing more
    assert after_load - before < SIZE_MB + 64, f"loading grew the process by {after_load - before:.0f} MB"


def test_large_array_round_trip_on_the_embedded_store():
    # (on real servers the streaming test above makes the same round trip)
    from tensorhub import TensorHub

    hub = TensorHub("mongomock://localhost/th_large", project_name="test")
    array = np.random.default_rng(3).integers(0, 2**31, size=(SIZE_MB * 2**20 // 4,), dtype=np.int32)
    record = hub.save_dataset(array, "large")
    assert record.size > SIZE_MB * 2**20
    assert hub.db["blobs.chunks"].count_documents({}) > 1000
    np.testing.assert_array_equal(hub.find_top_dataset("large"), array)
    hub.db.client.drop_database("th_large")


SAVE_FOREVER = textwrap.dedent("""
    import sys
    import numpy as np
    from tensorhub import TensorHub

    hub = TensorHub(sys.argv[1], project_name="test")
    hub.save_dataset(np.random.default_rng(1).random(200 * 2**20 // 8), "interrupted")
""")


@pytest.mark.real_server
def test_a_save_killed_half_way_leaves_no_document_only_a_cleanable_orphan(server_uri, server_hub):
    import datetime as dt
    import time

    saver = subprocess.Popen([sys.executable, "-c", SAVE_FOREVER, server_uri])
    try:
        deadline = time.monotonic() + 60
        while server_hub.db["blobs.chunks"].count_documents({}) < 20:
            assert time.monotonic() < deadline and saver.poll() is None, "the save never started writing"
            time.sleep(0.05)
        saver.kill()  # kill -9 in the middle of streaming the chunks
        saver.wait()
    finally:
        if saver.poll() is None:
            saver.kill()
    assert server_hub.db["datasets"].count_documents({}) == 0
    assert server_hub.find_top_dataset("interrupted") is None
    orphans = server_hub.find_orphan_blobs(older_than=dt.timedelta(seconds=-5))
    assert len(orphans) == 1  # the partial upload, found by its chunks
    assert server_hub.delete_orphan_blobs(older_than=dt.timedelta(seconds=-5)) == 1
    assert server_hub.db["blobs.chunks"].count_documents({}) == 0
