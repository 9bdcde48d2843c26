"""Tests of the KSM emulator, driven through the stock Keeper SDK."""
