"""The box office through Django's test client (``manage.py test``)."""

import time

from django.test import SimpleTestCase


class BoxOfficeTests(SimpleTestCase):
    def test_a_seat_is_reserved_once_then_refused_with_409(self) -> None:
        ok = self.client.post("/screenings/t1/seats/A1?guest=ada")
        self.assertEqual(ok.status_code, 200)
        self.assertEqual(ok.json(), {"reservation": "t1/A1"})
        taken = self.client.post("/screenings/t1/seats/A1?guest=bob")
        self.assertEqual(taken.status_code, 409)
        self.assertEqual(taken["Content-Type"], "application/problem+json")
        self.assertEqual(taken.json()["code"], "seat-taken")
        self.assertEqual(taken.json()["detail"], "seat A1 is taken")

    def test_a_receipt_is_accepted_and_its_outcome_polled(self) -> None:
        self.client.post("/screenings/t2/seats/B2?guest=grace")
        sent = self.client.post("/screenings/t2/seats/B2/receipt")
        self.assertEqual(sent.status_code, 202)
        location = sent["Location"]
        deadline = time.monotonic() + 20
        while True:
            body = self.client.get(location).json()
            if body["final"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(body["status"], "succeeded")
        self.assertEqual(body["result"], "receipt for grace, seat B2")
