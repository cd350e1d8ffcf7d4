"""``path("outcomes/", include("tidings.integrations.django.urls"))``: sent commands' outcomes."""

from __future__ import annotations

from django.urls import path

from tidings.integrations.django.facade import outcome_view

urlpatterns = [path("<str:message_id>", outcome_view, name="tidings-outcome")]
