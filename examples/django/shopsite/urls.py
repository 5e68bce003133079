"""URLs of the example shop."""

from django.urls import path

from shop import views

urlpatterns = [
    path("signup/", views.signup, name="signup"),
    path("exports/", views.create_export, name="create-export"),
    path("exports/<str:export_id>/", views.export, name="export"),
    path("exports/<str:export_id>/csv", views.export_csv, name="export-csv"),
    path("exports/<str:export_id>/events", views.export_events, name="export-events"),
]
