from django.urls import path

from django_shop import views

urlpatterns = [
    path("orders", views.place_order),
    path("quote", views.quote),
]
