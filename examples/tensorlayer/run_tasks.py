"""
Run this script on servers, it will monitor the database and run tasks when
task distributor push a task to the database.

"""
# Ported from TensorLayer's examples/database/run_tasks.py: only the import changed. tensorhub's
# own runner daemon does the same job with leases, retries and GPU slots:
#     tensorhub runner --uri mongodb://localhost:27017/temp --project tutorial
import time

from tensorhub import TensorHub

# connect to database
db = TensorHub(ip='localhost', port=27017, dbname='temp', project_name='tutorial')

# monitors the database and pull tasks to run
while True:
    print("waiting task from distributor")
    db.run_top_task(task_name='mnist', sort=[("time", -1)])
    time.sleep(1)
