"""The titled box every panel of the Training tab's settings column sits in."""
from __future__ import annotations

from PySide6.QtWidgets import QGroupBox, QLayout, QVBoxLayout, QWidget


def group_box(title: str, content: QWidget | QLayout) -> QGroupBox:
    box = QGroupBox(title)
    layout = QVBoxLayout(box)
    layout.setContentsMargins(8, 6, 8, 8)
    if isinstance(content, QWidget):
        layout.addWidget(content)
    else:
        layout.addLayout(content)
    return box
