#!/usr/bin/perl

# keyval_zone type=ip: IPv4 and IPv6 networks and addresses written through
# the API and "set", the most specific network wins, invalid keys are
# refused (API 400 KeyvalFormatError, "set": an error line) and never
# stored, keys are shown as text; on a 2-node cluster the same lookups
# answer on the peer, a deleted network stops matching everywhere, and a
# deny list on $remote_addr blocks on every node (http and stream).

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::Nginx::Stream qw/ stream /;
use Test::Nginx::Cluster;

###############################################################################

my $c = Test::Nginx::Cluster->new(2)->has(qw/http stream stream_return zone_sync/)
	->plan(41);

$c->write_file_expand(<<'EOF');

%%TEST_GLOBALS%%

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%

    keyval_zone zone=sdeny:1m type=ip sync;
    keyval $remote_addr $sblocked zone=sdeny;

    server {
        listen 127.0.0.1:%%NODE_SYNC%%;
        zone_sync;
        %%ALL_SYNC_SERVERS%%
        zone_sync_interval 10ms;
        zone_sync_connect_retry_interval 200ms;
    }

    server {
        listen 127.0.0.1:%%NODE_PORT_82%%;
        return "[$sblocked]";
    }
}

http {
    %%TEST_GLOBALS_HTTP%%

    keyval_zone zone=nets:1m type=ip sync;
    keyval $arg_ip $net zone=nets;

    keyval_zone zone=tnets:1m type=ip timeout=1h sync;
    keyval $arg_ip $tnet zone=tnets;

    keyval_zone zone=denylist:1m type=ip sync;
    keyval $remote_addr $blocked zone=denylist;

    server {
        listen 127.0.0.1:%%NODE_HTTP%%;

        location /match { return 200 "[$net]"; }
        location /tmatch { return 200 "[$tnet]"; }
        location /set { set $net $arg_v; return 200 "ok"; }

        location /app {
            if ($blocked) {
                return 403;
            }
            return 200 "welcome";
        }

        location /api/ {
            api write=on;
        }
    }
}

EOF

$c->run();

###############################################################################

sub api {
	my ($node, $method, $uri, $body) = @_;
	return http_json($c->http_port($node), $method, "/api/9$uri", $body);
}

sub match {
	my ($node, $ip) = @_;
	my $r = $c->http_get($node, "/match?ip=$ip") // '';
	return $r =~ /\[(.*)\]/ ? $1 : undef;
}

sub status_of {
	my ($node, $uri) = @_;
	my $r = $c->http_get($node, $uri) // '';
	return $r =~ m{^HTTP/1\.\d (\d+)} ? $1 : 0;
}

my %LOOKUPS = (
	'10.1.2.3' => 'host',
	'10.1.2.4' => 'net16',
	'10.1.0.0' => 'net16',
	'10.200.0.1' => 'net8',
	'11.0.0.1' => '',
	'2001:db8::1' => 'v6host',
	'2001:db8:ffff::7' => 'v6net',
	'2001:db9::1' => '',
	'::ffff:10.1.2.3' => 'host',
	'not-an-address' => '',
);

# networks and addresses through the API, on node 0

is((api(0, POST => '/http/keyvals/nets', '{"10.0.0.0/8":"net8"}'))[0], 201,
	'POST an IPv4 network');
is((api(0, POST => '/http/keyvals/nets', '{"10.1.0.0/16":"net16"}'))[0],
	201, 'POST a nested network');
is((api(0, POST => '/http/keyvals/nets', '{"10.1.2.3":"host"}'))[0], 201,
	'POST an IPv4 address');
is((api(0, POST => '/http/keyvals/nets', '{"2001:db8::/32":"v6net"}'))[0],
	201, 'POST an IPv6 network');
is((api(0, POST => '/http/keyvals/nets', '{"2001:DB8::1/128":"v6host"}'))[0],
	201, 'POST an IPv6 address, as a /128 in upper case');

for my $ip (sort keys %LOOKUPS) {
	is(match(0, $ip), $LOOKUPS{$ip}, "node 0: $ip matches '$LOOKUPS{$ip}'");
}

is_deeply((api(0, GET => '/http/keyvals/nets'))[1], {
	'10.0.0.0/8' => 'net8', '10.1.0.0/16' => 'net16', '10.1.2.3' => 'host',
	'2001:db8::/32' => 'v6net', '2001:db8::1' => 'v6host',
}, 'the API shows the keys as text, canonical');

# one network, several spellings

my ($s, $d) = api(0, POST => '/http/keyvals/nets', '{"10.9.9.9/8":"x"}');
is($s, 409, 'POST of 10.9.9.9/8: the network 10.0.0.0/8 exists');
is((api(0, PATCH => '/http/keyvals/nets', '{"10.1.2.3/32":"host"}'))[0],
	204, 'PATCH of 10.1.2.3/32 reaches the address 10.1.2.3');
is_deeply((api(0, GET => '/http/keyvals/nets?key=10.1.0.0/16'))[1],
	{ '10.1.0.0/16' => 'net16' }, 'GET ?key= of a network');

# invalid keys refused, never stored

for my $bad ('abc', '10.0.0.0/33', '1.2.3.4.5', '10.0.0.01', '::1/129') {
	($s, $d) = api(0, POST => '/http/keyvals/nets', qq{{"$bad":"x"}});
	is("$s " . ($d->{error}{code} // ''), '400 KeyvalFormatError',
		"POST of \"$bad\" refused");
}
is(keys %{(api(0, GET => '/http/keyvals/nets'))[1]}, 5,
	'nothing stored by the refused writes');

$c->http_get(0, '/set?ip=bogus&v=1');
ok(wait_for(sub {
	$c->node(0)->read_file('error.log')
		=~ /\[error\].*keyval zone "nets": invalid key "bogus" for type=ip/
}, timeout => 5), '"set" of an invalid key: error logged');

# a network written with "set" and the same lookups on node 1

$c->http_get(0, '/set?ip=192.168.0.0/16&v=viaset');
$LOOKUPS{'192.168.77.1'} = 'viaset';

ok(wait_for(sub {
	for my $ip (keys %LOOKUPS) {
		return 0 unless (match(1, $ip) // '-') eq $LOOKUPS{$ip};
	}
	return 1;
}, timeout => 10), 'node 1 answers every lookup as node 0 after sync');

# a deleted network stops matching everywhere

is((api(1, PATCH => '/http/keyvals/nets', '{"10.1.0.0/16":null}'))[0], 204,
	'delete 10.1.0.0/16 on node 1');
ok(wait_for(sub {
	(match(0, '10.1.2.4') // '') eq 'net8'
		&& (match(1, '10.1.2.4') // '') eq 'net8'
}, timeout => 10), 'deleted network: 10.1.2.4 falls back to 10.0.0.0/8 everywhere');
is(match(0, '10.1.2.3'), 'host', 'the address inside it still matches');

$c->http_get(1, '/set?ip=10.0.0.0/8&v=');
ok(wait_for(sub {
	(match(0, '10.200.0.1') // '-') eq '' && (match(1, '10.200.0.1') // '-') eq ''
}, timeout => 10), 'network deleted by "set" to empty: no match anywhere');

# an expiring network stops matching everywhere

sub tmatch {
	my ($node, $ip) = @_;
	my $r = $c->http_get($node, "/tmatch?ip=$ip") // '';
	return $r =~ /\[(.*)\]/ ? $1 : undef;
}

api(0, POST => '/http/keyvals/tnets', '{"172.16.0.0/12":"outer"}');
api(0, POST => '/http/keyvals/tnets',
	'{"172.16.5.0/24":{"value":"brief","expire":1500}}');
ok(wait_for(sub { (tmatch(1, '172.16.5.9') // '') eq 'brief' }, timeout => 10),
	'a network with a short expire matches on node 1');
ok(wait_for(sub {
	(tmatch(0, '172.16.5.9') // '') eq 'outer' && (tmatch(1, '172.16.5.9') // '') eq 'outer'
}, timeout => 15), 'once expired, the enclosing network matches everywhere');

# the deny list across the cluster

is(status_of($_, '/app'), 200, "node $_: not blocked yet") for 0, 1;

is((api(0, POST => '/http/keyvals/denylist', '{"127.0.0.0/8":"1"}'))[0], 201,
	'deny 127.0.0.0/8 on node 0');
ok(wait_for(sub { status_of(0, '/app') == 403 && status_of(1, '/app') == 403 },
	timeout => 10), 'both nodes answer 403');

is((api(1, PATCH => '/http/keyvals/denylist', '{"127.0.0.0/8":null}'))[0], 204,
	'lift the ban on node 1');
ok(wait_for(sub { status_of(0, '/app') == 200 && status_of(1, '/app') == 200 },
	timeout => 10), 'both nodes answer 200 again');

# stream: the same in a stream zone

sub sget {
	my ($node) = @_;
	my $r = stream('127.0.0.1:' . $c->port($node, 82))->read() // '';
	return $r =~ /\[(.*)\]/ ? $1 : undef;
}

is((api(1, POST => '/stream/keyvals/sdeny', '{"127.0.0.1":"banned"}'))[0], 201,
	'stream: ban 127.0.0.1 on node 1');
ok(wait_for(sub { (sget(0) // '') eq 'banned' && (sget(1) // '') eq 'banned' },
	timeout => 10), 'stream: $remote_addr matches on both nodes');

$c->stop();

###############################################################################
