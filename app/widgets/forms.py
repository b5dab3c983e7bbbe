"""Small helpers shared by the app's forms."""
from __future__ import annotations

from PySide6.QtWidgets import QFormLayout, QWidget


def share_tooltips_with_labels(form: QFormLayout, fallbacks: dict[int, QWidget] | None = None) -> None:
    """Give each row's label its field's tooltip, so hovering the name explains the knob too.

    `fallbacks` names the widget whose tooltip a row uses when its field is a layout, not a widget.
    """
    fallbacks = fallbacks or {}
    for row in range(form.rowCount()):
        label = form.itemAt(row, QFormLayout.ItemRole.LabelRole)
        field = form.itemAt(row, QFormLayout.ItemRole.FieldRole)
        if label is None or label.widget() is None or field is None:
            continue
        widget = field.widget() or fallbacks.get(row)
        if widget is not None:
            label.widget().setToolTip(widget.toolTip())
