"""Data: dataset formats (registry), the NeRSemble reader, subjects, cameras, protocols, frame loading
and the posed FLAME meshes of a sequence."""
