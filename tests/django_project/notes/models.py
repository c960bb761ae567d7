from django.db import models


class Note(models.Model):
    title = models.CharField(max_length=200)
    seen_by_task = models.BooleanField(default=False)
