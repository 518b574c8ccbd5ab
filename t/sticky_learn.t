#!/usr/bin/perl

# sticky learn across a cluster: sessions created through node 0 are
# routed to the same server by nodes 1 and 2 (with sync) and unknown there
# (without); header vs no header; timeout refreshed by use and expiry on
# every node; a session whose server is down falls back and is re-learned
# everywhere; a session on a server one node alone has is left alone by
# the others; a restarted node learns every session from its peers.
#
# The backends are extra server blocks of node 0 (ports 90, 91, 92): a
# request without a "sid" cookie gets one; every response names the server.

use strict;
use warnings;

use Test::More;
use IO::Select;
use Time::HiRes qw(time);

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::Nginx::Cluster;

###############################################################################

my $c = Test::Nginx::Cluster->new(3)->has(qw/http proxy stream zone_sync/)
	->plan(24);

# node 1's server A is "down" when set
my $a_down = 0;

my $body = 'x' x 2000;

my $template = <<'EOF';

%%TEST_GLOBALS%%

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%

    server {
        listen 127.0.0.1:%%NODE_SYNC%%;
        zone_sync;
        %%ALL_SYNC_SERVERS%%
        zone_sync_interval 10ms;
        zone_sync_connect_retry_interval 200ms;
    }
}

http {
    %%TEST_GLOBALS_HTTP%%

    upstream synced {
        server 127.0.0.1:%%NODE0_PORT_90%% @ADOWN@;
        server 127.0.0.1:%%NODE0_PORT_91%%;
        @EXTRA@
        sticky learn create=$upstream_cookie_sid lookup=$cookie_sid
               zone=ls:1m sync;
    }

    upstream local {
        server 127.0.0.1:%%NODE0_PORT_90%%;
        server 127.0.0.1:%%NODE0_PORT_91%%;
        sync_sticky learn create=$upstream_cookie_nosuch
                    create=$upstream_cookie_sid
                    lookup=$cookie_nosuch lookup=$cookie_sid zone=ll:1m;
    }

    upstream header {
        server 127.0.0.1:%%NODE0_PORT_90%%;
        server 127.0.0.1:%%NODE0_PORT_91%%;
        sticky learn create=$upstream_cookie_sid lookup=$cookie_sid
               zone=lh:1m header;
    }

    upstream noheader {
        server 127.0.0.1:%%NODE0_PORT_90%%;
        server 127.0.0.1:%%NODE0_PORT_91%%;
        sticky learn create=$upstream_cookie_sid lookup=$cookie_sid
               zone=ln:1m;
    }

    upstream short {
        server 127.0.0.1:%%NODE0_PORT_90%%;
        server 127.0.0.1:%%NODE0_PORT_91%%;
        sticky learn create=$upstream_cookie_sid lookup=$cookie_sid
               zone=lt:1m timeout=2s sync;
    }

    server {
        listen 127.0.0.1:%%NODE_HTTP%%;

        location /synced { proxy_pass http://synced; }
        location /local { proxy_pass http://local; }
        # unbuffered: the client sees the headers before the body
        location /header { proxy_pass http://header; proxy_buffering off; }
        location /noheader { proxy_pass http://noheader; proxy_buffering off; }
        location /short { proxy_pass http://short; }
        location /api/ { api; }
    }

    @BACKENDS@
}

EOF

my $backends = <<'EOF';
    server {
        listen 127.0.0.1:%%NODE0_PORT_90%%;
        listen 127.0.0.1:%%NODE0_PORT_91%%;
        listen 127.0.0.1:%%NODE0_PORT_92%%;

        location / {
            if ($cookie_sid = "") {
                add_header Set-Cookie "sid=$request_id";
            }
            return 200 "server $server_port\n";
        }

        location ~ /slow$ {
            limit_rate 500;
            if ($cookie_sid = "") {
                add_header Set-Cookie "sid=$request_id";
                add_header X-Server $server_port;
            }
            return 200 "@BODY@";
        }
    }
EOF

sub template {
	my ($i) = @_;
	my $conf = $template;
	my $b = $i == 0 ? $backends : '';
	$b =~ s/\@BODY\@/$body/;
	$conf =~ s/\@BACKENDS\@/$b/;
	# node 2 alone has server C
	my $extra = $i == 2 ? 'server 127.0.0.1:%%NODE0_PORT_92%%;' : '';
	$conf =~ s/\@EXTRA\@/$extra/;
	my $down = $i == 1 && $a_down ? 'down' : '';
	$conf =~ s/\@ADOWN\@/$down/;
	return $conf;
}

$c->write_file_expand(\&template);
$c->run();

###############################################################################

my ($pa, $pb, $pc) = map { $c->port(0, $_) } 90, 91, 92;

# (server port, new session id or undef)
sub req {
	my ($i, $loc, $sid) = @_;
	my %h = defined $sid ? (headers => { Cookie => "sid=$sid" }) : ();
	my $r = $c->http_get($i, $loc, %h) // '';
	my ($port) = $r =~ /server (\d+)/;
	my ($new) = $r =~ /Set-Cookie: sid=(\w+)/i;
	return ($port // 0, $new);
}

sub server_of { (req(@_))[0] }

sub records {
	my ($i, $zone) = @_;
	my ($st, $j) = http_json($c->http_port($i), GET => '/api/9/stream/zone_sync');
	return -1 unless $st && $st == 200 && ref $j;
	return $j->{zones}{$zone}{records_total} // -1;
}

# 100 sessions through node 0, honoured by nodes 1 and 2

my %sess;
for (1 .. 100) {
	my ($port, $sid) = req(0, '/synced');
	$sess{$sid} = $port if defined $sid;
}
is(scalar keys %sess, 100, '100 sessions created through node 0');
ok((grep { $_ == $pa } values %sess) && (grep { $_ == $pb } values %sess),
	'on both servers');

sub all_routed {
	my ($i, $loc, $s) = @_;
	for my $sid (keys %$s) {
		return 0 unless server_of($i, $loc, $sid) == $s->{$sid};
	}
	return 1;
}

ok(wait_for(sub { all_routed(1, '/synced', \%sess) }, timeout => 15),
	'node 1 routes the 100 sessions to their servers');
ok(wait_for(sub { all_routed(2, '/synced', \%sess) }, timeout => 15),
	'node 2 routes the 100 sessions to their servers');
ok(wait_for(sub { records(1, 'ls') == 100 && records(2, 'ls') == 100 },
	timeout => 10), 'records_total 100 on nodes 1 and 2');
is(server_of(0, '/synced', (keys %sess)[0]), $sess{(keys %sess)[0]},
	'node 0 too');

# without sync, nodes 1 and 2 do not know them

my %local;
for (1 .. 20) {
	my ($port, $sid) = req(0, '/local');
	$local{$sid} = $port if defined $sid;
}
ok(all_routed(0, '/local', \%local), 'local zone: node 0 routes its sessions');
for my $i (1, 2) {
	my $differ = grep { server_of($i, '/local', $_) != $local{$_} } keys %local;
	ok($differ > 0, "local zone: node $i does not know them ($differ of 20 elsewhere)");
}

# header: the session exists as soon as the response headers arrive

sub slow_start {
	my ($loc) = @_;
	my $s = http_start("GET $loc HTTP/1.0\r\nHost: localhost\r\n\r\n",
		port => $c->http_port(0));
	my $head = '';
	my $sel = IO::Select->new($s);
	my $deadline = time() + 10;
	while ($head !~ /\r\n\r\n/ && time() < $deadline) {
		last unless $sel->can_read(1);
		my $n = sysread($s, my $buf, 1024);
		last unless $n;
		$head .= $buf;
	}
	my ($sid) = $head =~ /Set-Cookie: sid=(\w+)/i;
	my ($srv) = $head =~ /X-Server: (\d+)/i;
	return ($s, $sid, $srv);
}

my ($s, $sid, $srv) = slow_start('/header/slow');
ok(defined $sid && $srv, 'header: slow response started');
my @during = map { server_of(0, '/header', $sid) } 1 .. 2;
is("@during", "$srv $srv", 'header: session known while the body streams');
http_end($s);

($s, $sid, $srv) = slow_start('/noheader/slow');
@during = map { server_of(0, '/noheader', $sid) } 1 .. 2;
ok((grep { $_ != $srv } @during), 'no header: session unknown while the body streams');
http_end($s);
is(server_of(0, '/noheader', $sid), $srv, 'no header: known once the response is done');

# timeout: refreshed by use on any node, then expiry on every node

my ($tport, $tsid) = req(0, '/short');
ok(wait_for(sub { records($_, 'lt') == 1 or return 0 for 0 .. 2; 1 }, timeout => 5),
	'short session on every node');
my $t0 = time();
my $kept = 1;
while (time() - $t0 < 4) {
	$kept &&= server_of(1, '/short', $tsid) == $tport;
	select undef, undef, undef, 0.3;
}
ok($kept && records(0, 'lt') == 1 && records(2, 'lt') == 1,
	'used on node 1 for twice its timeout: alive on every node');
ok(wait_for(sub { records($_, 'lt') == 0 or return 0 for 0 .. 2; 1 }, timeout => 10),
	'unused: expired on every node');

# a session whose server is down falls back and is re-learned

my ($asid) = grep { $sess{$_} == $pa } keys %sess;
$a_down = 1;
$c->node(1)->write_file_expand('nginx.conf', $c->expand_node(1, template(1)));
ok($c->reload_node(1), 'node 1 reloaded with server A down');
ok(wait_for(sub { server_of(1, '/synced', $asid) == $pb }, timeout => 10),
	'down: node 1 falls back to server B');
ok(wait_for(sub { server_of(0, '/synced', $asid) == $pb
		&& server_of(2, '/synced', $asid) == $pb }, timeout => 10),
	're-learned: nodes 0 and 2 now route the session to server B');

# a server present on node 2 only

my $csid;
for (1 .. 10) {
	my ($port, $sid) = req(2, '/synced');
	if ($port == $pc) { $csid = $sid; last; }
}
ok(defined $csid, 'a session on server C, which node 2 alone has');
ok(wait_for(sub { records(0, 'ls') == records(2, 'ls') }, timeout => 10),
	'synced to node 0');
server_of(0, '/synced', $csid) for 1 .. 4;
is(server_of(2, '/synced', $csid), $pc,
	'node 0 served it elsewhere and left it alone: still server C on node 2');

# a restarted node learns every session again from its peers

delete $sess{$asid};
$c->stop_node(2);
$c->start_node(2);
ok(wait_for(sub { records(2, 'ls') == records(0, 'ls') && records(0, 'ls') >= 100 },
	timeout => 15), 'restarted node 2 has every session again');
ok(all_routed(2, '/synced', \%sess), 'and routes them to their servers');

###############################################################################
