"""Response models of the registry API (the OpenAPI document's schemas)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorBody(BaseModel):
    """Every error response."""

    error: str = Field(description="short machine-readable error code")
    message: str = Field(description="what went wrong")
    field: str | None = Field(default=None, description="dotted path of the offending field")


class WriteResult(BaseModel):
    key: str
    revision: int


class ResourceList(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    items: list[dict[str, Any]]
    revision: int = Field(description="registry revision of the snapshot")
    total: int | None = Field(default=None, description=(
        "with `limit`: resources matching the request on every page"))
    continue_: str | None = Field(default=None, alias="continue", description=(
        "with `limit`: pass as `continue` for the next page; absent on the last page"))


class ApplyItem(BaseModel):
    key: str
    action: str = Field(description="created, updated or unchanged")
    revision: int = Field(description="mod_revision of the resource after the apply")


class ApplyResult(BaseModel):
    results: list[ApplyItem]
    revision: int = Field(description="highest revision among the applied resources")


class DigestResult(BaseModel):
    digest: str
    revision: int
    count: int


class RevisionResult(BaseModel):
    revision: int


class NodeEntry(BaseModel):
    name: str
    admin_url: str


class NodeList(BaseModel):
    nodes: list[NodeEntry]


class ClusterNode(BaseModel):
    name: str
    admin_url: str
    status: dict[str, Any] | None = None
    error: str | None = None


class ClusterResult(BaseModel):
    revision: int
    digest: str
    nodes: list[ClusterNode]
