"""The queues measured, by the name used on the command line."""

from systems.django_tasks_db import DjangoTasksDB
from systems.pgjobs import PgJobs
from systems.procrastinate import Procrastinate

SYSTEMS = {s.name: s for s in (PgJobs(), DjangoTasksDB(), Procrastinate())}
