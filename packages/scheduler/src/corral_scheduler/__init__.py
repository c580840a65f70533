"""Corral's control plane: the gRPC API, state, queues, autoscaler and placement."""

from corral_scheduler.control_plane import ControlPlane

__all__ = ["ControlPlane"]
