"""The dedicated detector (issue 6): frozen ViT backbone -> simple feature pyramid -> Mix-FFN neck ->
NMS-free one-to-one head. Built so far: box operations, the Hungarian matcher, the simple feature pyramid."""
