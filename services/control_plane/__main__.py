from services.control_plane.service import SERVICE
from shopmesh.runtime.server import main

main(SERVICE)
