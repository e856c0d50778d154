{ k3s.flags = [ "once" ]; }
