"""The queues measured, by the name used on the command line."""

from systems.chancy import Chancy
from systems.django_tasks_db import DjangoTasksDB
from systems.oban import Oban
from systems.pgjobs import PgJobs
from systems.pgjobs_baseline import PgJobsBaseline
from systems.pgjobs_celery import PgJobsCelery
from systems.pgqueuer import PgQueuer
from systems.procrastinate import Procrastinate
from systems.redis_celery import Celery
from systems.redis_pgjobs import PgJobsRedis
from systems.redis_rq import RQ

SYSTEMS = {
    s.name: s
    for s in (
        PgJobs(),
        PgJobsBaseline(),
        PgQueuer(),
        DjangoTasksDB(),
        Procrastinate(),
        Oban(),
        Chancy(),
        PgJobsRedis(),
        RQ(),
        Celery(),
        PgJobsCelery(),
    )
}
