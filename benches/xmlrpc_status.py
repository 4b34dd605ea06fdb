"""Supervisor status straight from supervisord's XML-RPC socket (profiling: what `supervisorctl
status` costs without supervisorctl's imports). Run as root with `python3 -S`."""
import http.client, socket, xmlrpc.client
class C(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect("/run/supervisor.sock")
class T(xmlrpc.client.Transport):
    def make_connection(self, host): return C("localhost")
for i in xmlrpc.client.ServerProxy("http://localhost", transport=T()).supervisor.getAllProcessInfo():
    n = i["name"] if i["group"] == i["name"] else i["group"] + ":" + i["name"]
    print(n, i["statename"], i["description"])
