"""Renditions ahead of time (``pgjobs.contrib.wagtail.renditions``): real images
uploaded and replaced through the Wagtail admin, their configured renditions made
by a worker with Wagtail's own API.

Runs in the integration pass (``--ds=tests.wagtail_settings``).
"""

import io

import pytest
from django.conf import settings

if "pgjobs.contrib.wagtail" not in settings.INSTALLED_APPS:
    pytest.skip(
        "integration pass only: pytest --ds=tests.wagtail_settings", allow_module_level=True
    )

from django.contrib.auth.models import User  # noqa: E402
from django.core import checks  # noqa: E402
from django.core.files.uploadedfile import SimpleUploadedFile  # noqa: E402
from django.test import override_settings  # noqa: E402
from PIL import Image as PILImage  # noqa: E402
from wagtail.images import get_image_model  # noqa: E402
from wagtail.models import Collection  # noqa: E402

from pgjobs import records  # noqa: E402
from pgjobs.models import Job  # noqa: E402
from tests.conftest import run_jobs  # noqa: E402
from tests.wagtailapp.site import make_home  # noqa: E402

pytestmark = pytest.mark.sql_store("reads the job rows")

SPECS = ["fill-80x60", "width-40|format-webp"]
GENERATE = "pgjobs.contrib.wagtail.renditions.generate_renditions"
Image = get_image_model()


def png(width, height, colour="red"):
    buffer = io.BytesIO()
    PILImage.new("RGB", (width, height), colour).save(buffer, "PNG")
    return SimpleUploadedFile(f"{colour}.png", buffer.getvalue(), content_type="image/png")


@pytest.fixture
def site(tmp_path, transactional_db):
    """A Wagtail site with media in a temporary folder and ``SPECS`` configured."""
    with override_settings(
        MEDIA_ROOT=str(tmp_path), PGJOBS={**settings.PGJOBS, "WAGTAIL_RENDITIONS": SPECS}
    ):
        make_home()
        yield


@pytest.fixture
def admin_client(client, site):
    client.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))
    return client


def upload(client, width, height, colour="red"):
    response = client.post(
        "/admin/images/add/",
        {
            "title": colour,
            "file": png(width, height, colour),
            "collection": Collection.get_first_root_node().pk,
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    return Image.objects.get(title=colour)


def generate_jobs():
    return Job.objects.filter(func=GENERATE)


def renditions_of(image):
    return {r.filter_spec: r for r in image.renditions.all()}


def test_an_uploaded_image_gets_its_renditions_from_a_worker(admin_client):
    image = upload(admin_client, 200, 100)
    (job,) = generate_jobs()
    assert job.status == records.READY and job.args == [image.pk, SPECS]
    assert renditions_of(image) == {}  # not made in the request

    run_jobs()
    job.refresh_from_db()
    assert job.status == records.SUCCEEDED, job.error
    made = renditions_of(image)
    assert set(made) == set(SPECS)
    assert (made["fill-80x60"].width, made["fill-80x60"].height) == (80, 60)
    webp = made["width-40|format-webp"]
    assert (webp.width, webp.height) == (40, 20) and webp.file.name.endswith(".webp")
    with webp.file.open() as f:
        assert PILImage.open(f).format == "WEBP"
    # Wagtail finds them: a page view makes nothing new.
    assert image.get_rendition("fill-80x60").file.name == made["fill-80x60"].file.name
    assert image.renditions.count() == len(SPECS)

    # Editing only its title is not a new file: nothing is enqueued.
    image.title = "renamed"
    image.save()
    assert generate_jobs().count() == 1


def test_a_replaced_file_gets_fresh_renditions(admin_client):
    image = upload(admin_client, 200, 100)
    run_jobs()
    old = renditions_of(image)["width-40|format-webp"]
    assert (old.width, old.height) == (40, 20)

    response = admin_client.post(
        f"/admin/images/{image.pk}/",
        {"title": "red", "file": png(100, 200, "blue"), "collection": image.collection_id},
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    run_jobs()
    image.refresh_from_db()
    fresh = renditions_of(image)
    assert set(fresh) == set(SPECS)
    assert (fresh["width-40|format-webp"].width, fresh["width-40|format-webp"].height) == (40, 80)
    assert fresh["width-40|format-webp"].pk != old.pk
    assert status_counts_of_generate() == {records.SUCCEEDED}


def status_counts_of_generate():
    return set(generate_jobs().values_list("status", flat=True))


def test_without_specs_nothing_is_enqueued(admin_client):
    with override_settings(PGJOBS={**settings.PGJOBS, "WAGTAIL_RENDITIONS": []}):
        upload(admin_client, 50, 50)
    assert not generate_jobs().exists()


def test_a_deleted_image_ends_its_job_quietly(admin_client):
    image = upload(admin_client, 50, 50)
    Image.objects.filter(pk=image.pk).delete()
    run_jobs()
    assert list(generate_jobs().values_list("status", "result")) == [(records.SUCCEEDED, {})]


@pytest.mark.parametrize(
    "value, words",
    [("fill-80x60", "must be a list"), (["fill-80x60", "blur-9000"], "'blur-9000'")],
)
def test_checks_report_bad_specs(value, words):
    with override_settings(PGJOBS={**settings.PGJOBS, "WAGTAIL_RENDITIONS": value}):
        (error,) = [m for m in checks.run_checks(tags=["pgjobs"]) if m.id == "pgjobs.E022"]
        assert words in error.msg and "WAGTAIL_RENDITIONS" in error.msg


def test_deleting_an_image_enqueues_nothing_for_it(admin_client):
    image = upload(admin_client, 50, 50)
    run_jobs()
    assert image.renditions.count() == len(SPECS)
    image.delete()  # its renditions go with it: nothing to make again
    assert generate_jobs().count() == 1
    other = upload(admin_client, 50, 50, colour="blue")
    run_jobs()
    Image.objects.filter(pk=other.pk).delete()
    assert generate_jobs().count() == 2


def test_a_hash_filled_in_for_the_same_file_is_not_a_new_file(admin_client):
    image = upload(admin_client, 50, 50)
    run_jobs()
    Image.objects.filter(pk=image.pk).update(file_hash="")  # an image stored without one
    image.refresh_from_db()
    assert image.get_file_hash()  # Wagtail computes and saves it
    assert generate_jobs().count() == 1
