"""/v1/datasets: the public catalog for every principal; registration and changes for its provider."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from pdo.catalog.public import Dataset
from pdo.gateway.auth import AnyPrincipal, Provider
from pdo.gateway.deps import DatasetId, catalog
from pdo.gateway.models import ERROR_RESPONSES, DatasetIn, DatasetPatch, Reason

router = APIRouter(prefix="/v1/datasets", responses=ERROR_RESPONSES, tags=["catalog"])


@router.get("", summary="List datasets in the catalog")
def list_datasets(
    request: Request,
    principal: AnyPrincipal,
    provider_id: Annotated[str | None, Query(max_length=128, pattern=r"^[a-z]+:[a-z0-9._-]+$")] = None,
    include_retired: bool = False,
) -> list[Dataset]:
    return catalog(request).list(provider_id=provider_id, include_retired=include_retired)


@router.get("/{dataset_id}", summary="One dataset")
def get_dataset(request: Request, principal: AnyPrincipal, dataset_id: DatasetId) -> Dataset:
    return catalog(request).get(dataset_id)


@router.post("", status_code=201, summary="Register a dataset (providers)")
def register_dataset(request: Request, provider: Provider, body: DatasetIn) -> Dataset:
    who = provider.principal_id
    return catalog(request).register(who, body.to_domain(), actor=who)


@router.patch("/{dataset_id}", summary="Change a dataset you provide")
def update_dataset(
    request: Request, provider: Provider, dataset_id: DatasetId, body: DatasetPatch
) -> Dataset:
    who = provider.principal_id
    return catalog(request).update(who, dataset_id, body.to_domain(), actor=who)


@router.post("/{dataset_id}/retire", summary="Retire a dataset you provide")
def retire_dataset(request: Request, provider: Provider, dataset_id: DatasetId, body: Reason) -> Dataset:
    who = provider.principal_id
    return catalog(request).retire(who, dataset_id, body.reason, actor=who)
