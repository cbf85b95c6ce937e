"""TensorLayer's database example, ported to tf.keras and tensorhub.

    # everything in one process, on the embedded store:
    python examples/mnist/distributor.py
    # with MongoDB (docker compose up -d mongodb) and runner daemons elsewhere:
    python examples/mnist/distributor.py --uri "mongodb://localhost:27017/tensorhub?directConnection=true"
    tensorhub runner --uri "mongodb://localhost:27017/tensorhub?directConnection=true" --project mnist-example
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from digits import make_digits  # noqa: E402

from tensorhub import TensorHub  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uri", default="mongomock://", help="hub URI (default: the embedded store)")
    parser.add_argument("--project", default="mnist-example")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the runners")
    args = parser.parse_args()

    hub = TensorHub(args.uri, project_name=args.project)
    hub.save_dataset(make_digits(), "mnist", description="MNIST-like generated digits")

    hub.delete_tasks("mnist-mlp")  # start clean when re-run
    for n_units in (16, 64, 256):
        hub.create_task("mnist-mlp", script=HERE / "train_mlp.py",
                        hyper_parameters={"n_units": n_units, "epochs": 2},
                        saved_result_keys=["test_accuracy"])

    if hub.embedded:
        print("embedded store: running the tasks in this process")
        hub.run_tasks("mnist-mlp")
    else:
        print("waiting for runners: tensorhub runner --uri URI --project", args.project)
        hub.wait_for_tasks("mnist-mlp", timeout=args.timeout)

    for task in hub.find_tasks("mnist-mlp"):
        print(f"task {task['_id']}: n_units={task['hyper_parameters']['n_units']:>3} "
              f"{task['status']:<8} {task['result'] or task['error']}")
    best = hub.find_top_model(sort=[("test_accuracy", -1)], model_name="mlp")
    print(f"best model: n_units={best._n_units} test_accuracy={best._test_accuracy:.3f} "
          f"(version {best.hub_record.version})")


if __name__ == "__main__":
    main()
