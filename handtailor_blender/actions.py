"""Blender's animation API across versions: the one place that knows how an action holds its fcurves.

Every check is on a feature, never on `bpy.app.version`, so a Blender newer than the ones tested has the best
chance (DESIGN.md, README "Blender versions"). What differs:

- 4.2-4.3: legacy actions, `action.fcurves.new(path, index=, action_group=)`, no slots.
- 4.4-4.5: slotted (layered) actions: `action.slots.new(id_type=, name=)`, the keys live in a channelbag of a
  keyframe strip (`action.layers.new()`, `layer.strips.new(type="KEYFRAME")`, `strip.channelbag(slot,
  ensure=True)`); `channelbag.fcurves.new` takes no group, the group is set after creation; the legacy
  `action.fcurves` is a proxy for the first slot.
- 5.0+: `bpy_extras.anim_utils.action_ensure_channelbag_for_slot`, `fcurves.new(..., group_name=)`, and
  `action.fcurves` is gone.

The collections returned here (`fcurves_of`, `new_action`, `own_fcurves`) behave alike in every version: `find(path,
index=)`, iteration, `len`, and `new_fcurve` to add one.
"""

from __future__ import annotations

import bpy


def _anim_utils():
    from bpy_extras import anim_utils

    return anim_utils


def is_slotted(action) -> bool:
    """True when this Blender's actions have slots (4.4+)."""
    return hasattr(action, "slots")


def ensure_channelbag(action, slot):
    """The channelbag holding `slot`'s fcurves in `action`, created (layer, keyframe strip) when missing."""
    ensure = getattr(_anim_utils(), "action_ensure_channelbag_for_slot", None)
    if ensure is not None:
        return ensure(action, slot)
    layer = action.layers[0] if len(action.layers) else action.layers.new("Layer")
    strip = layer.strips[0] if len(layer.strips) else layer.strips.new(type="KEYFRAME")
    return strip.channelbag(slot, ensure=True)


def channelbag(action, slot):
    """`slot`'s channelbag in `action`, or None (nothing created)."""
    get = getattr(_anim_utils(), "action_get_channelbag_for_slot", None)
    if get is not None:
        return get(action, slot)
    for layer in action.layers:
        for strip in layer.strips:
            cb = strip.channelbag(slot)
            if cb is not None:
                return cb
    return None


def new_action(id_block, name: str, id_type: str):
    """A fresh action assigned to `id_block` (id_type 'OBJECT', 'KEY', ... for the slot); returns (action,
    fcurve collection). Fake user: a take stays in the file while another take is active."""
    action = bpy.data.actions.new(name)
    action.use_fake_user = True
    ad = id_block.animation_data_create()
    if is_slotted(action):
        slot = action.slots.new(id_type=id_type, name=id_block.name)
        ad.action = action
        ad.action_slot = slot
        return action, ensure_channelbag(action, slot).fcurves
    ad.action = action
    return action, action.fcurves


def assign_action(id_block, action) -> None:
    """Makes `action` (and its first slot, where actions have slots) the one animating `id_block`."""
    ad = id_block.animation_data_create()
    ad.action = action
    if is_slotted(action) and hasattr(ad, "action_slot") and len(action.slots):
        ad.action_slot = action.slots[0]


def own_fcurves(id_block, name: str, id_type: str = "OBJECT"):
    """(action, fcurves) of the action `id_block` already plays (its slot's, a slot made when it has none), or
    of a new action `name` (no fake user) when it has none: keys added there are the user's own."""
    ad = id_block.animation_data
    if ad is None or ad.action is None:
        action, fcurves = new_action(id_block, name, id_type)
        action.use_fake_user = False
        return action, fcurves
    action = ad.action
    if is_slotted(action):
        if ad.action_slot is None:
            ad.action_slot = action.slots.new(id_type=id_type, name=id_block.name)
        return action, ensure_channelbag(action, ad.action_slot).fcurves
    return action, action.fcurves


def all_fcurves(action):
    """Every fcurve of `action`: all layers, strips and slots of a slotted one, else the legacy list."""
    layers = getattr(action, "layers", None)
    if layers is not None and len(layers):
        for layer in layers:
            for strip in layer.strips:
                for cb in strip.channelbags:
                    yield from cb.fcurves
    else:
        yield from getattr(action, "fcurves", ())


def fcurves_of(action):
    """The fcurve collection of a take action (its first slot's on slotted actions); None when it has none."""
    if is_slotted(action) and len(action.slots):
        cb = channelbag(action, action.slots[0])
        return cb.fcurves if cb is not None else None
    return getattr(action, "fcurves", None)  # legacy actions; 5.0+ has no fcurves outside a slot


_GROUP_KEYWORD: dict[str, str | None] = {}


def _group_keyword(fcurves) -> str | None:
    """The keyword `fcurves.new` takes for the group ('group_name' 5.0+, 'action_group' legacy), or None."""
    kind = fcurves.bl_rna.identifier
    if kind not in _GROUP_KEYWORD:
        params = {p.identifier for p in fcurves.bl_rna.functions["new"].parameters}
        _GROUP_KEYWORD[kind] = next((k for k in ("group_name", "action_group") if k in params), None)
    return _GROUP_KEYWORD[kind]


def new_fcurve(fcurves, data_path: str, index: int, group: str):
    """A new fcurve in `fcurves` (from `new_action` / `fcurves_of`), in the channel group `group`."""
    keyword = _group_keyword(fcurves)
    if keyword is not None:
        return fcurves.new(data_path, index=index, **{keyword: group})
    fc = fcurves.new(data_path, index=index)  # 4.4-4.5 channelbags: the group is set afterwards
    groups = fcurves.data.groups
    fc.group = groups.get(group) or groups.new(group)
    return fc
