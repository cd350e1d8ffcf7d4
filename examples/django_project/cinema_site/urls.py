from django.urls import include, path

from box_office import views

urlpatterns = [
    path("", views.index),
    path("screenings/<str:screening>/seats/<str:seat>", views.reserve),
    path("screenings/<str:screening>/seats/<str:seat>/receipt", views.receipt),
    path("outcomes/", include("tidings.integrations.django.urls")),
]
