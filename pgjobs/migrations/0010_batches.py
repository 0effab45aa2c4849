"""Batches and chains: the ``Batch`` table, and on ``Job`` the batch a job belongs
to, the job it runs after (``after_id``, status ``waiting`` until then), whether
jobs wait for it, and the result of the job it ran after."""

import django.db.models.functions.datetime
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('pgjobs', '0009_atomic'),
    ]

    operations = [
        migrations.CreateModel(
            name='Batch',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('description', models.CharField(blank=True, db_default='', max_length=255)),
                ('total', models.IntegerField(help_text='Jobs in the batch.')),
                ('pending', models.IntegerField(help_text='Jobs not finished yet (ready, running, retrying).')),
                ('succeeded', models.IntegerField(db_default=0)),
                ('failed', models.IntegerField(db_default=0)),
                ('cancelled', models.IntegerField(db_default=0)),
                ('created_at', models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
                ('finished_at', models.DateTimeField(blank=True, null=True)),
                ('on_finish_id', models.BigIntegerField(blank=True, help_text='Runs when every job has finished.', null=True, verbose_name='on-finish job')),
                ('on_success_id', models.BigIntegerField(blank=True, help_text='Runs when every job succeeded.', null=True, verbose_name='on-success job')),
            ],
            options={
                'verbose_name': 'batch',
                'verbose_name_plural': 'batches',
                'db_table': 'pgjobs_batch',
                'ordering': ['-id'],
            },
        ),
        migrations.RemoveConstraint(
            model_name='job',
            name='pgjobs_job_status_valid',
        ),
        migrations.AddField(
            model_name='job',
            name='after_id',
            field=models.BigIntegerField(blank=True, help_text='The job this one runs after: it waits until that job succeeds.', null=True, verbose_name='runs after'),
        ),
        migrations.AddField(
            model_name='job',
            name='batch_id',
            field=models.BigIntegerField(blank=True, help_text='The batch this job belongs to.', null=True, verbose_name='batch'),
        ),
        migrations.AddField(
            model_name='job',
            name='has_dependents',
            field=models.BooleanField(db_default=False, help_text='Jobs wait for this one to succeed (a chain).'),
        ),
        migrations.AddField(
            model_name='job',
            name='previous_result',
            field=models.JSONField(blank=True, help_text='The result of the job this one ran after.', null=True),
        ),
        migrations.AlterField(
            model_name='job',
            name='status',
            field=models.CharField(choices=[('ready', 'Ready'), ('running', 'Running'), ('succeeded', 'Succeeded'), ('failed', 'Failed'), ('cancelled', 'Cancelled'), ('waiting', 'Waiting')], db_default='ready', max_length=10),
        ),
        migrations.AddIndex(
            model_name='job',
            index=models.Index(condition=models.Q(('batch_id__isnull', False)), fields=['batch_id'], name='pgjobs_job_batch_idx'),
        ),
        migrations.AddIndex(
            model_name='job',
            index=models.Index(condition=models.Q(('status', 'waiting')), fields=['after_id'], name='pgjobs_job_waiting_idx'),
        ),
        migrations.AddConstraint(
            model_name='job',
            constraint=models.CheckConstraint(condition=models.Q(('status__in', ('ready', 'running', 'succeeded', 'failed', 'cancelled', 'waiting'))), name='pgjobs_job_status_valid'),
        ),
        migrations.AddIndex(
            model_name='batch',
            index=models.Index(condition=models.Q(('finished_at__isnull', False)), fields=['finished_at'], name='pgjobs_batch_finished_idx'),
        ),
    ]
