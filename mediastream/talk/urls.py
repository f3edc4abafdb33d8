"""The talk page's URL; a project includes it under its admin::

    urlpatterns = [path("admin/talk/", include("mediastream.talk.urls")), path("admin/", admin.site.urls), ...]
"""

from django.urls import path

from .views import talk_page

app_name = "mediastream_talk"

urlpatterns = [path("", talk_page, name="page")]
