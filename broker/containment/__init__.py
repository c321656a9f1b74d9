"""Containment: lock a plant down, disable an identity, and cut what they had open."""
