from box_office import views
from django.urls import include, path

urlpatterns = [
    path("", views.index),
    path("screenings/<str:screening>/seats/<str:seat>", views.reserve),
    path("screenings/<str:screening>/seats/<str:seat>/receipt", views.receipt),
    path("outcomes/", include("tidings.integrations.django.urls")),
]
