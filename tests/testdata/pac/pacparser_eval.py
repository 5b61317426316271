"""What pacparser (the reference PAC implementation) returns for each URL, one line each:
the other side of tests/pac_differential.rs. Usage: pacparser_eval.py PAC MY_IP URL..."""
import sys
import urllib.parse

import pacparser

pac, my_ip, urls = sys.argv[1], sys.argv[2], sys.argv[3:]
pacparser.enable_microsoft_extensions()
pacparser.init()
pacparser.setmyip(my_ip)
pacparser.parse_pac_file(pac)
for url in urls:
    host = urllib.parse.urlsplit(url).hostname or ""
    print(pacparser.find_proxy(url, host))
