"""The table the "orm" job kind writes to: one small row per job, through the ORM.

Installed in every benchmark project (``bench_common.BASE_APPS``), so each
system's "orm" job does the same Django ORM insert into its own database.
"""
