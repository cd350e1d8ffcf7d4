"""JSON views: reserve a seat now (409 when taken), issue its receipt later (202)."""

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from box_office.messaging import IssueReceipt, ReserveSeat
from tidings.integrations.django import accepted, get_app


def index(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"position": get_app().position()})


@csrf_exempt
@require_POST
def reserve(request: HttpRequest, screening: str, seat: str) -> JsonResponse:
    guest = request.GET["guest"]
    return JsonResponse({"reservation": get_app().invoke(ReserveSeat(screening, seat, guest))})


@csrf_exempt
@require_POST
def receipt(request: HttpRequest, screening: str, seat: str) -> JsonResponse:
    return accepted(request, get_app().send(IssueReceipt(screening, seat)))
