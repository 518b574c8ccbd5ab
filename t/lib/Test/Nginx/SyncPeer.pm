package Test::Nginx::SyncPeer;

# A peer speaking the zone_sync wire protocol (docs/PROTOCOL.md) from
# perl, for tests that play a hostile or scripted node. The frames are
# encoded and decoded by Test::Nginx::ZoneSync.

=head1 NAME

Test::Nginx::SyncPeer - a scripted zone_sync peer

=head1 SYNOPSIS

    use Test::Nginx::SyncPeer;
    use Test::Nginx::ZoneSync qw/zs_now_hlc/;

    # the zones a node offers: [ [name, kind, kind_version], ... ]
    my $zones = Test::Nginx::SyncPeer->probe('127.0.0.1:' . $port);

    # as a client: HELLO exchanged, then records to the node
    my $p = Test::Nginx::SyncPeer->connect('127.0.0.1:' . $port,
        node_id => 0x1234567, zones => [ [ 'rl', 2, 2 ] ]);
    my $seq = $p->send_records('rl', 2, 2, [ { key => 'k',
        value => $bytes, hlc => zs_now_hlc(), origin => 0x1234567 } ]);
    $p->wait_ack($seq) or die;      # applied (or skipped) by the node
    $p->close;

    # as a server: a node configured with "zone_sync_server" on this
    # port connects; its snapshot is read until SNAPSHOT_DONE
    my $l = Test::Nginx::SyncPeer->listen('127.0.0.1:' . $port);
    my $s = $l->accept(node_id => 0x7654321, zones => [ [ 'rl', 2, 2 ] ]);
    my $records = $s->snapshot;     # [ { zone, key, value, hlc, origin, ... } ]

Timeouts are in seconds, scaled by TEST_NGINX_TIMEOUT_SCALE.

=cut

use strict;
use warnings;

use IO::Select;
use IO::Socket::INET;
use Time::HiRes ();

use Test::Nginx::Util qw(scaled);
use Test::Nginx::ZoneSync qw(:types zs_hello zs_record zs_records zs_ack
    zs_error zs_take_frames zs_parse_hello zs_parse_records);

###############################################################################

sub _new {
    my ($class, $sock) = @_;
    $sock->autoflush(1);
    return bless { sock => $sock, buf => '', frames => [], seq => 0 },
        $class;
}

# a client connection to $addr: sends HELLO, reads the node's HELLO
sub connect {
    my ($class, $addr, %o) = @_;
    my $sock = IO::Socket::INET->new(PeerAddr => $addr,
        Timeout => scaled(5)) or die "sync peer: connect $addr: $!\n";
    my $self = $class->_new($sock);
    $self->write(zs_hello($o{node_id} // 0x5e17e57, @{$o{zones} // []}));
    my ($type, $body) = $self->read_frame($o{timeout} // 5);
    die "sync peer: no HELLO from $addr\n"
        unless defined $type && $type == HELLO;
    $self->{hello} = zs_parse_hello($body);
    return $self;
}

# the zones a node offers, from its HELLO
sub probe {
    my ($class, $addr) = @_;
    my $p = $class->connect($addr, node_id => 0x9e0be, zones => []);
    $p->close;
    return $p->{hello}{zones};
}

# the node's HELLO, parsed
sub hello { return $_[0]->{hello} }

sub listen {
    my ($class, $addr) = @_;
    my $sock = IO::Socket::INET->new(LocalAddr => $addr, Listen => 4,
        ReuseAddr => 1) or die "sync peer: listen $addr: $!\n";
    return bless { listen => $sock }, $class;
}

# a server connection: waits for a node to connect, reads its HELLO and
# answers with ours (a version-1 HELLO: the node then speaks version 1);
# with "v1_only => 1" it answers a HELLO of another version as a version-1
# node does, ERROR UNSUPPORTED_VERSION, and returns the string "refused"
sub accept {
    my ($self, %o) = @_;
    my $l = $self->{listen};
    return undef unless IO::Select->new($l)->can_read(scaled($o{timeout} // 10));
    my $sock = $l->accept() or return undef;
    my $p = (ref $self)->_new($sock);
    my ($type, $body) = $p->read_frame($o{timeout} // 5);
    return undef unless defined $type && $type == HELLO;
    $p->{hello} = zs_parse_hello($body);
    if ($o{v1_only} && $p->{hello}{version} != 1) {
        $p->write(zs_error(1, 'unsupported version'));
        $p->close;
        return 'refused';
    }
    $p->write(zs_hello($o{node_id} // 0x5e17e58, @{$o{zones} // []}));
    return $p;
}

sub write {
    my ($self, $data) = @_;
    local $SIG{PIPE} = 'IGNORE';
    my $off = 0;
    while ($off < length $data) {
        my $n = syswrite($self->{sock}, $data, length($data) - $off, $off);
        return 0 unless defined $n;
        $off += $n;
    }
    return 1;
}

# the next frame (HEARTBEATs skipped): (type, body), or () on EOF or
# timeout
sub read_frame {
    my ($self, $timeout) = @_;
    my $deadline = Time::HiRes::time() + scaled($timeout // 5);
    my $sel = IO::Select->new($self->{sock});
    for (;;) {
        while (my $f = shift @{$self->{frames}}) {
            return @$f unless $f->[0] == HEARTBEAT;
        }
        my $left = $deadline - Time::HiRes::time();
        return () if $left <= 0 || !$sel->can_read($left);
        my $n = sysread($self->{sock}, my $chunk, 65536);
        return () unless $n;
        $self->{buf} .= $chunk;
        push @{$self->{frames}}, zs_take_frames(\$self->{buf});
    }
}

# sends one RECORDS frame; returns its seq
sub send_records {
    my ($self, $zone, $kind, $kv, $records, %o) = @_;
    my $seq = ++$self->{seq};
    $self->write(zs_records(seq => $seq, zone => $zone, kind => $kind,
        kind_version => $kv, flags => $o{snapshot} ? 1 : 0,
        records => [ map { zs_record(%$_) } @$records ]));
    return $seq;
}

# true once the node acknowledged $seq
sub wait_ack {
    my ($self, $seq, $timeout) = @_;
    my $deadline = Time::HiRes::time() + scaled($timeout // 5);
    for (;;) {
        my $left = ($deadline - Time::HiRes::time()) / scaled(1);
        return 0 if $left <= 0;
        my ($type, $body) = $self->read_frame($left) or return 0;
        next unless $type == ACK;
        return 1 if unpack('Q>', $body) >= $seq;
    }
}

# a client node's snapshot: a reference to every record up to
# SNAPSHOT_DONE (each frame acknowledged), or undef if it did not complete
# in time
sub snapshot {
    my ($self, $timeout) = @_;
    my $deadline = Time::HiRes::time() + scaled($timeout // 10);
    my @records;
    for (;;) {
        my $left = ($deadline - Time::HiRes::time()) / scaled(1);
        return undef if $left <= 0;
        my ($type, $body) = $self->read_frame($left) or return undef;
        if ($type == RECORDS) {
            my $f = zs_parse_records($body);
            push @records, @{$f->{records}};
            $self->write(zs_ack($f->{seq}));
        } elsif ($type == SNAPSHOT_DONE) {
            return \@records;
        } elsif ($type == ERROR) {
            return undef;
        }
    }
}

sub close {
    my ($self) = @_;
    CORE::close($self->{sock}) if $self->{sock};
    CORE::close($self->{listen}) if $self->{listen};
    return 1;
}

1;
